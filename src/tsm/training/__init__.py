"""Training: the LightningModule, its optimizer recipe, callbacks, SLURM support and the train task."""
