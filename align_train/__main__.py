"""``python -m align_train`` (and so ``accelerate launch -m align_train``) is the align-train command."""

from align_train.cli.train import main

if __name__ == "__main__":
    main()
