// Inline code in a table cell: a name without spaces (`chunk_size=1024`, `lecun_normal`) is
// never broken inside a word; a long dotted name (`jax.nn.initializers.variance_scaling`) may
// break after its dots only; code with spaces wraps at its spaces like the text around it.
document$.subscribe(function () {
  document.querySelectorAll(".md-typeset td code, .md-typeset th code").forEach(function (c) {
    if (/\s/.test(c.textContent) || c.querySelector("wbr")) return;
    c.classList.add("gl-name");
    if (c.textContent.length > 24 && c.children.length === 0 && c.textContent.indexOf(".") > 0) {
      var parts = c.textContent.split(".");
      c.textContent = "";
      parts.forEach(function (part, i) {
        if (i > 0) {
          c.appendChild(document.createTextNode("."));
          c.appendChild(document.createElement("wbr"));
        }
        c.appendChild(document.createTextNode(part));
      });
    }
  });
});
