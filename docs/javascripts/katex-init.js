// Renders the formulas that pymdownx.arithmatex marks (generic mode) with the KaTeX shipped
// under javascripts/katex/, on first load and after every instant-navigation page change.
document$.subscribe(function () {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
