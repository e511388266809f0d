; pcibios.asm -- the PCI BIOS (INT 1Ah AH=B1) as SeaBIOS 1.16 answers it
; under QEMU 7.2's pc with a legacy virtio-blk device next to the IDE disk
; (record.sh's pcibios@0+v): installation check, find device (the PIIX3
; IDE, the host bridge, the virtio-blk function, a second and an absent
; one), find class (IDE, host bridge), configuration reads of every width
; and writes (the IDE function's latency timer, a byte, a word, a dword,
; each read back), an unknown function.  Per call, to debugcon: the
; function, EAX, EBX, ECX, EDX, EDI and the flags' CF.  tests/data/kvm/
; record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov ax, 0x0200 + (data_end - table + 511) / 512
  mov cx, 0x0002
  xor dh, dh
  mov bx, 0x7E00
  int 0x13
  mov bp, table
next:
  cmp bp, table_end
  jae done
  mov eax, [bp]
  mov ebx, [bp + 4]
  mov ecx, [bp + 8]
  mov edx, [bp + 12]
  mov si, [bp + 16]
  mov di, [bp + 18]
  push bp
  stc
  int 0x1A
  pop bp
  pushf
  push eax
  mov al, [bp]
  out DBGC, al
  pop eax
  call put4
  mov eax, ebx
  call put4
  mov eax, ecx
  call put4
  mov eax, edx
  call put4
  mov eax, edi
  call put4
  pop ax
  and al, 1
  out DBGC, al
  add bp, 20
  jmp next
done:
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
put4:
  out DBGC, al
  shr eax, 8
  out DBGC, al
  shr eax, 8
  out DBGC, al
  shr eax, 8
  out DBGC, al
  ret
  times 510-($-$$) db 0
  dw 0xAA55

%macro B1 6   ; eax, ebx, ecx, edx, si, di
  dd %1, %2, %3, %4
  dw %5, %6
%endmacro
IDE equ 0x0009      ; 00:01.1
table:
  B1 0xB101, 0, 0, 0, 0, 0                     ; installation check
  B1 0xB102, 0, 0x7010, 0x8086, 0, 0           ; PIIX3 IDE
  B1 0xB102, 0, 0x7010, 0x8086, 1, 0           ; a second one: none
  B1 0xB102, 0, 0x1237, 0x8086, 0, 0           ; i440FX
  B1 0xB102, 0, 0x1001, 0x1AF4, 0, 0           ; virtio-blk (legacy)
  B1 0xB102, 0, 0x1234, 0xFFFF, 0, 0           ; bad vendor
  B1 0xB103, 0, 0x010180, 0, 0, 0              ; IDE class
  B1 0xB103, 0, 0x060000, 0, 0, 0              ; host bridge
  B1 0xB103, 0, 0x060000, 0, 1, 0
  B1 0xB103, 0, 0x010000, 0, 0, 0              ; SCSI: virtio-blk's
  B1 0xB108, IDE, 0, 0, 0, 0x00                ; vendor, byte
  B1 0xB108, IDE, 0, 0, 0, 0x0D                ; latency timer
  B1 0xB109, IDE, 0, 0, 0, 0x02                ; device id
  B1 0xB109, IDE, 0, 0, 0, 0x04                ; command
  B1 0xB10A, IDE, 0, 0, 0, 0x08                ; class/revision
  B1 0xB10A, IDE, 0, 0, 0, 0x20                ; BAR4
  B1 0xB10A, 0x0010, 0, 0, 0, 0x10             ; virtio BAR0
  B1 0xB10A, 0x0010, 0, 0, 0, 0x3C             ; virtio interrupt line
  B1 0xB10B, IDE, 0x40, 0, 0, 0x0D             ; latency timer = 0x40
  B1 0xB108, IDE, 0, 0, 0, 0x0D
  B1 0xB10C, IDE, 0x0005, 0, 0, 0x04           ; command: I/O + master
  B1 0xB109, IDE, 0, 0, 0, 0x04
  B1 0xB10D, IDE, 0x12345678, 0, 0, 0x3C       ; interrupt line/pin/...
  B1 0xB10A, IDE, 0, 0, 0, 0x3C
  B1 0xB10A, 0x00FF, 0, 0, 0, 0x00             ; absent device
  B1 0xB120, 0, 0, 0, 0, 0                     ; unknown
table_end:
data_end:
  align 512, db 0
