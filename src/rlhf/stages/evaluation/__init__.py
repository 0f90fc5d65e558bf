"""The evaluation stage's parts; the stage function itself is ``rlhf.stages.evaluate.run``.

- ``compared``: the compared models' names and folders; ModelResult, one model's scored samples
- ``prompts``: the held-out prompts (and any answers in the data)
- ``sampling``: each model loaded once: its samples, perplexity, KL(candidate || reference)
- ``scoring``: the samples judged by the reward model and the gold reward
- ``metrics``: the flat metrics from the scores (pure functions)
- ``history``: the candidate's training history, plotted in the report
- ``plots``: the report's inline PNG plots
- ``report``: the self-contained HTML report
- ``registration``: the champion gate's decision and the registry versions it leads to
- ``publishing``: writing the outputs, logging them to the tracker, ``publish_to``
"""
