"""The control-plane fixtures, for the tests in this folder."""

from tests.openstack.fixtures import openstack_cloud, os_admin, os_conn

__all__ = ["openstack_cloud", "os_admin", "os_conn"]
