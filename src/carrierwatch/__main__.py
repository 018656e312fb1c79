from carrierwatch.cli import main

main()
