"""Training: the trainer's steps, connecting to Ray, the two backends (in this process, through Tune), tracking."""
