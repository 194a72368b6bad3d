"""The commands: align-train, align-eval, align-data, align-launch (``python -m align_train`` is align-train).

Every command composes configs through ``align_train.composition``, reports through
``align_train.console`` and turns a user's mistake into one line and exit code 2 through
``errors.run_command``. Nothing below this folder imports from it.
"""
