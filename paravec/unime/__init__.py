"""UniME's two training recipes, offered beside the VLM2Vec baseline and PDF.

- :mod:`paravec.unime.distill`        stage 1, textual discriminative knowledge distillation
                                      (``method.name: unime-stage1``)
- :mod:`paravec.unime.teacher`        the teacher's embeddings, computed once
                                      (``paravec unime teacher``)
- :mod:`paravec.unime.text_pairs`     the text pairs both read
- :mod:`paravec.unime.hard_negatives` stage 2, hard-negative InfoNCE with false-negative
                                      filtering (``method.name: unime-stage2``, or PDF with
                                      ``loss.hard_negatives.enabled: true``)
"""
