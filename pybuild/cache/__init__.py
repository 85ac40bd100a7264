"""pybuild.cache"""
