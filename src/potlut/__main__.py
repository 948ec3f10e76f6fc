from potlut.cli.main import main

main()
