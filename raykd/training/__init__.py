"""The training loop shared by the student and the teacher fine-tuning (DeepSpeed inside,
Ray Train around it)."""
