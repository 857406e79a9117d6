"""Sequence analysis: DNA -> protein (Biopython) and similarity to the parent (pairwise alignment)."""

from __future__ import annotations

from functools import lru_cache

from Bio import Align
from Bio.Align import substitution_matrices
from Bio.Seq import Seq
from pydantic import BaseModel

from examples.genslm.codon import PARENT_PROTEIN


class GeneAnalysis(BaseModel):
    """What the analysis found about one generated gene.

    Attributes:
        id: Gene id.
        dna: The gene as generated (codons joined).
        protein: Its translation up to the first stop codon ('' when it is not an ORF).
        orf: Starts with ATG, whole codons, ends at a stop, at least half the parent's length.
        identity: Identical residues / parent length in the global alignment (0 when not an ORF).
        score: BLOSUM62 alignment score / the parent's self-score.
        length: Protein length.
    """

    id: str
    dna: str
    protein: str
    orf: bool
    identity: float
    score: float
    length: int


@lru_cache(maxsize=1)
def _aligner() -> Align.PairwiseAligner:
    aligner = Align.PairwiseAligner()
    aligner.mode = "global"
    aligner.substitution_matrix = substitution_matrices.load("BLOSUM62")
    aligner.open_gap_score = -10.0
    aligner.extend_gap_score = -0.5
    return aligner


@lru_cache(maxsize=1)
def _self_score() -> float:
    return float(_aligner().score(PARENT_PROTEIN, PARENT_PROTEIN))


def analyze(gene_id: str, dna: str) -> GeneAnalysis:
    """Translates ``dna`` and aligns the protein to the parent."""
    dna = dna.upper().replace(" ", "")
    whole = len(dna) - len(dna) % 3
    protein = str(Seq(dna[:whole]).translate(to_stop=True)) if whole else ""
    ends_in_stop = len(protein) * 3 + 3 <= whole
    orf = dna.startswith("ATG") and ends_in_stop and len(protein) >= len(PARENT_PROTEIN) // 2
    if not orf:
        return GeneAnalysis(
            id=gene_id,
            dna=dna,
            protein=protein,
            orf=False,
            identity=0.0,
            score=0.0,
            length=len(protein),
        )
    aligner = _aligner()
    alignment = aligner.align(PARENT_PROTEIN, protein)[0]
    identical = int(alignment.counts().identities)
    return GeneAnalysis(
        id=gene_id,
        dna=dna,
        protein=protein,
        orf=True,
        identity=identical / len(PARENT_PROTEIN),
        score=float(alignment.score) / _self_score(),
        length=len(protein),
    )
