"""``python -m examples.mof``: see `examples.mof.run`."""

from examples.common.runtime import prepare_environment

prepare_environment()  # before Ray is imported: it reads RAY_AUTH_MODE and BLAS threads at import

from examples.mof.run import main

main()
