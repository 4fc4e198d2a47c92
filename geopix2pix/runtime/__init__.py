"""What every command runs on, below the models: the device, the torchrun processes, stopping on
Ctrl-C or SIGTERM, and output folders built beside their destination. Imports no torch itself."""
