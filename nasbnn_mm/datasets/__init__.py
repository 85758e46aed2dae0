from .archive_folder import ArchiveImageFolder, default_cache_dir, extract_archive

__all__ = ['ArchiveImageFolder', 'extract_archive', 'default_cache_dir']
