"""``python -m align_train`` (and so ``accelerate launch -m align_train``) is the align-train command."""

from align_train.cli import main

if __name__ == "__main__":
    main()
