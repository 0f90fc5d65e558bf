"""Human and AI feedback: labelling batches of candidate answers, the labelling app, labeller
agreement, the export that ``rlhf prepare`` reads, and the judge (RLAIF)."""
