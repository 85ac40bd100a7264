"""pybuild.frontend.dockerfile"""
