"""Stage 3, measurements into verdicts: each leaf verified, wrong or unresolved, with why.

Takes what a sweep measured; judges relative errors against noise floors, and runs the
verification stages that measure again (a smaller step, retries, Richardson extrapolation,
flat leaves, ties broken nearby), second-order columns, custom rules, the consistency of
``f`` and the precision audit. Hands report rows on. May import evaluation, planning,
programs and report.
"""
