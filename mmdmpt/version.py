"""Version of mmdmpt."""

__version__ = '0.2.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse a version string like ``'0.1.0rc1'`` into a tuple of ints/strs."""
    info = []
    for part in version_str.split('.'):
        if part.isdigit():
            info.append(int(part))
        else:
            digits = ''.join(ch for ch in part if ch.isdigit())
            info.append(int(digits) if digits else 0)
            info.append(part[len(digits) :])
    return tuple(info)


version_info = parse_version_info(__version__)
