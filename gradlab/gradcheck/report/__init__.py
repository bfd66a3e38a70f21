"""Stage 6 (beside programs), what a check hands back: reports, verdict bands, progress.

``CheckReport`` and its ``LeafReport`` rows, ``RuleReport``, the bands a relative error
reads in, and the progress bar. Every stage may import it; it imports no other stage.
"""
