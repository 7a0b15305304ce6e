"""Training and evaluation data: the MMEB-train reader, image loading, the batch sampler and the
built-in mini benchmark generator.

Everything here produces :class:`paravec.items.Item` objects (text, PIL image, instruction); turning
items into model inputs is the backbone adapter's job, not the data layer's.
"""
