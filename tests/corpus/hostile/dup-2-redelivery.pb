
$7e57c0de-0000-4000-8000-000000000032	c-hostile —îÊ"corpusR
o-dup‡'EUR

kettle