"""Clefs Pulumi components: the multi-region key pyramid and storage per data class."""
