from vectis.cli.main import main

main()
