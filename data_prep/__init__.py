"""Data preparation (writes token stores; readers live in ``mambaseq.data``).

- ``fasta``: FASTA (plain/gzip) -> token store, with optional soft-mask runs.
- ``maf``: multiple alignment -> per-species store split by alignment region.
- ``simulate``: seeded great-ape genome simulator (SYNTHETIC, labelled so).
- ``apes``: the great-apes data sets behind one interface (FASTA / Debian chr22 MAF / simulator).
- ``store``: atomic, idempotent store writer.
- ``sc09``: spoken-digit audio data (audio pipeline).

Biopython is imported only when a FASTA or MAF file is parsed.
"""
