"""``python -m examples.genslm``: see `examples.genslm.run`."""

from examples.common.runtime import prepare_environment

prepare_environment()  # before Ray is imported: it reads RAY_AUTH_MODE and BLAS threads at import

from examples.genslm.run import main

main()
