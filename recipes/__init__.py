"""The built-in recipes (`nlpfw run quickstart`): this folder is installed as `nlpfw.recipes`."""
