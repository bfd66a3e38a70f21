"""Stage 2, the orchestration of a check: prepare → sweep and judge → audit → report.

Takes ``f`` and validated options from the entry points. Prepares ``f`` at θ (the precision
it runs in, the problem, the plan), runs the first- or second-order sweep and its
verification stages, audits the precision and assembles the report it hands back. May import
judging, evaluation, planning, programs and report.
"""
