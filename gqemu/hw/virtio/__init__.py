"""virtio: the device core (virtio.py), the legacy PCI transport
(virtio_pci.py) and the block device (virtio_blk.py)."""
