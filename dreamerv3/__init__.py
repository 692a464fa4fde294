"""(filled in during integration)"""
