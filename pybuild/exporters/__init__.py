"""pybuild.exporters"""
