"""pybuild.builder"""
