"""GenSLM-style enzyme design: a User agent, a Generation agent sampling genes from a served codon LM,
and a SequenceAnalysis agent with a checkpointed repository. Run with ``python -m examples.genslm``.
"""
