"""Every command's options, declared once and torch-free."""
