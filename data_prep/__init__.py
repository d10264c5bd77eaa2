"""Data preparation: raw files in, prepared data sets out (the store format, its reader and writer live in
``mambaseq.data.store``; the digit set's reader in ``mambaseq.audio.digits``).

- ``fasta``: FASTA (plain/gzip) -> token store, with optional soft-mask runs.
- ``maf``: multiple alignment -> per-species store split by alignment region.
- ``simulate``: seeded great-ape genome simulator (SYNTHETIC, labelled so).
- ``apes``: the great-apes data sets behind one interface (FASTA / Debian chr22 MAF / simulator).
- ``pretrain``: the pretraining genome (FASTA / Debian's human chr20 / simulator).
- ``sources``: Debian-packaged defaults and the ``data.source=auto`` rule.
- ``sc09``: spoken-digit audio data (audio pipeline).

Biopython is imported only when a FASTA or MAF file is parsed.
"""
