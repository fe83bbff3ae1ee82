"""`tfxsp predict`: batch scoring of a CSV file of raw rows with a pushed version, streaming.

    target.py   what is scored with: the version, its dataset contract and classes (ML Metadata lineage)
    reader.py   the input CSV as batches of the raw serving signature's inputs, and its rejected rows
    scorers.py  one batch scored in this process (the SavedModel), over REST or over gRPC
    writer.py   the output CSV (input columns, then prediction columns) and the rejects file
    batch.py    the loop: read, score a few batches at a time, write in order, count, measure
"""
