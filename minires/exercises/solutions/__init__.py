"""Reference solutions of the backward-pass exercises, kept apart from the templates.

Each file here is its template from lessons/exercises/ with backward() written. The grader uses
them for the expected gradients; try the exercise before you read them.
"""
