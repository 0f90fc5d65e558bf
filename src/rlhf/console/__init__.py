"""What a person sees while stages run: progress of the long loops, one line when a stage starts
and one when it ends, and (for ``rlhf run``) the quieting of kfp.local's own output."""
