"""The model side: loading, building and saving models and tokenizers, encoding
conversations into token ids, padding, forward passes (log-probs, values), sampling, reward
scoring and reference log-probs. Depends on ``algorithms`` and ``storage``, never on
``training``, ``stages`` or ``pipeline``."""
