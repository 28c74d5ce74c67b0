"""tuner/flags.py: a parameter set becomes SGLang's command line; the flag catalog read from --help."""
