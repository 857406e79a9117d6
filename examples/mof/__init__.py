"""MOF discovery, shaped like MOFA: generative linkers, assembly, stability, CO2 uptake, online learning.

Agents (`examples.mof.agents`): Generator -> Assembler -> Validator -> Estimator, all recording into the
Database, which retrains the Generator on the best half of what was scored. Run it with
``python -m examples.mof`` (see ``--help``).
"""
