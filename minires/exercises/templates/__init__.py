"""The pristine exercise templates (see README.md here); `python -m minires.exercises reset NAME`
copies one over the learner's file in lessons/exercises/."""
