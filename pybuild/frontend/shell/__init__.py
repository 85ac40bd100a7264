"""pybuild.frontend.shell"""
