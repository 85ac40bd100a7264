"""pybuild.registry"""
