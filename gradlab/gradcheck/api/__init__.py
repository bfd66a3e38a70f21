"""Stage 1, the entry points: ``check``, ``check_second_order``, ``assert_check``, ``check_rule``.

Takes the user's call (``f``, its arguments and keyword options), validates the options and
hands them to the pipeline; ``check_rule``, a short pipeline of its own, runs here. Hands back
a report. May import every other stage.
"""
