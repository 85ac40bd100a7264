"""pybuild.content"""
