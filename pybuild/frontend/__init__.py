"""pybuild.frontend"""
