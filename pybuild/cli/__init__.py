"""pybuild.cli"""
