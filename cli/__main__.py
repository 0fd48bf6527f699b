"""`python -m cli ...` == `gwadm ...` (the supervisor spawns members this way)."""

from cli.main import main

if __name__ == "__main__":
    main()
