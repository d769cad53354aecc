"""The pipeline's library: data conversion, input pipelines, models, training,
tracking and evaluation. Stage entry points in ``pipeline/`` stay thin and call in here.
"""
