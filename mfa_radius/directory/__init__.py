"""Directories the primary password is checked against (LDAP, Active Directory)."""
