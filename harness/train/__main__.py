from harness.train.loop import main

main()
