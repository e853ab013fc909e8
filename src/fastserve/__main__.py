from fastserve.cli import main

main()
