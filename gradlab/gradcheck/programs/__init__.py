"""Stage 6, ``f`` as programs: promoted, fingerprinted, compiled, kept and scoped.

Takes jaxprs and kernels; widens reduced precision inside ``f``, fingerprints programs by
what they compute, compiles them in tiers, keeps them in memory, in JAX's compilation cache
and on disk, and leaves the caller's process as it was. Hands executables on. Imports no
other stage.
"""
