"""``python -m rs4m``: the same command line as ``rs4m``."""

from rs4m.cli import main

if __name__ == "__main__":
    main()
